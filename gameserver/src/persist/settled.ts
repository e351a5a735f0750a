/** The longest delay setTimeout takes; anything longer fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Resolves true once `work` has settled, either way, within `ms`; false when it has not (it goes on
 * unawaited). Never rejects: read the outcome from `work` itself.
 */
export async function settledWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  // No bound at all when `ms` is infinite (setTimeout would take it for 1 ms).
  const late = new Promise<false>((resolve) => {
    if (ms < MAX_TIMER_MS) timer = setTimeout(() => resolve(false), Math.max(0, ms));
  });
  try {
    return await Promise.race([
      work.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
