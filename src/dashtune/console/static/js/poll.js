// Repeat an async refresh every `ms` until stopped; a slow call never overlaps the next.

export function poll(fn, ms) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    let again = true;
    try {
      again = (await fn()) !== false;
    } catch (err) {
      console.warn("refresh failed", err);
    }
    if (!stopped && again) timer = setTimeout(tick, typeof ms === "function" ? ms() : ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
