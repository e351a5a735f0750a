/** A player walking to one random point after another (the soak's players, the world tests' bots). */
export interface Walker {
  target: { x: number; y: number };
}

/**
 * One move of `step` world units from where `client` predicts its entity towards `walker.target`;
 * within two steps of it, a new target from `pick` instead (and no move this time).
 */
export function walkTowards(
  client: { readonly predicted: { x: number; y: number }; move(dx: number, dy: number): number },
  walker: Walker,
  step: number,
  pick: () => { x: number; y: number },
): void {
  const me = client.predicted;
  const dx = walker.target.x - me.x;
  const dy = walker.target.y - me.y;
  const d = Math.hypot(dx, dy);
  if (d < step * 2) {
    walker.target = pick();
    return;
  }
  client.move((dx / d) * step, (dy / d) * step);
}
