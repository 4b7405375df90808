// The loss chart: train loss and eval loss against step, drawn with the vendored uPlot.
// Metric points arrive one per report (a train log and an eval at the same step are two
// points), so they are merged by step; gaps are spanned so sparse eval points join up.

const HEIGHT = 320;
const STEP_INCREMENTS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];

function merge(points) {
  const byStep = new Map();
  for (const p of points) {
    const row = byStep.get(p.step) || { loss: null, eval: null };
    if (typeof p.loss === "number") row.loss = p.loss;
    if (typeof p.eval_loss === "number") row.eval = p.eval_loss;
    byStep.set(p.step, row);
  }
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  return [steps, steps.map((s) => byStep.get(s).loss), steps.map((s) => byStep.get(s).eval)];
}

export function lossChart(container) {
  let plot = null;
  const size = () => ({ width: Math.max(container.clientWidth, 200), height: HEIGHT });
  const resize = new ResizeObserver(() => plot && plot.setSize(size()));
  resize.observe(container);

  function options() {
    return {
      ...size(),
      scales: { x: { time: false } },
      axes: [
        // Steps are whole numbers: tick only at integer spacings.
        { label: "step", stroke: "#6b7280", grid: { stroke: "#eef0f3" }, incrs: STEP_INCREMENTS },
        { label: "loss", stroke: "#6b7280", grid: { stroke: "#eef0f3" }, size: 60 },
      ],
      series: [
        { label: "step" },
        { label: "train loss", stroke: "#2563eb", width: 2, spanGaps: true, points: { show: false } },
        { label: "eval loss", stroke: "#ea580c", width: 2, spanGaps: true, points: { show: true, size: 7, fill: "#ea580c" } },
      ],
      cursor: { drag: { x: true, y: false } },
    };
  }

  return {
    update(points) {
      const data = merge(points);
      container.dataset.steps = String(data[0].length);
      container.dataset.lossPoints = String(data[1].filter((v) => v !== null).length);
      container.dataset.evalPoints = String(data[2].filter((v) => v !== null).length);
      if (!data[0].length) return;
      if (plot) plot.setData(data);
      else plot = new window.uPlot(options(), data, container);
    },
    destroy() {
      resize.disconnect();
      if (plot) plot.destroy();
    },
  };
}
