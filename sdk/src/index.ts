export { aethex, PROTOCOL_VERSION } from '@aethex/proto';
