import type { Rect } from './settings.js';

/** One region of a world's grid: shard index `row * columns + column`. */
export interface Region {
  shard: number;
  column: number;
  row: number;
  bounds: Rect;
  /** Shard indexes of the regions sharing an edge or a corner, ascending. */
  neighbours: number[];
}

/**
 * Splits `bounds` into `columns × rows` rectangles of equal size (min inclusive, max exclusive;
 * the last column and row end exactly at the world's max, so the union is the world).
 */
export function regions(bounds: Rect, columns: number, rows: number): Region[] {
  const w = (bounds.maxX - bounds.minX) / columns;
  const h = (bounds.maxY - bounds.minY) / rows;
  const out: Region[] = [];
  for (let row = 0; row < rows; row++) {
    for (let column = 0; column < columns; column++) {
      const neighbours: number[] = [];
      for (let dr = -1; dr <= 1; dr++) {
        for (let dc = -1; dc <= 1; dc++) {
          const r = row + dr;
          const c = column + dc;
          if ((dr !== 0 || dc !== 0) && r >= 0 && r < rows && c >= 0 && c < columns) neighbours.push(r * columns + c);
        }
      }
      out.push({
        shard: row * columns + column,
        column,
        row,
        bounds: {
          minX: bounds.minX + column * w,
          minY: bounds.minY + row * h,
          maxX: column === columns - 1 ? bounds.maxX : bounds.minX + (column + 1) * w,
          maxY: row === rows - 1 ? bounds.maxY : bounds.minY + (row + 1) * h,
        },
        neighbours: neighbours.sort((a, b) => a - b),
      });
    }
  }
  return out;
}
