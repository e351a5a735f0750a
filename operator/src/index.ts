export * from './api/gameworld.js';
