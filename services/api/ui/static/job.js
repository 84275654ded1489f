// The job page: two uPlot charts fed by the page's JSON, then by the job's server-sent events.
(function () {
  "use strict";
  var TERMINAL = { SUCCEEDED: true, FAILED: true, CANCELLED: true };
  var LOSSES = ["train/box_loss", "train/cls_loss", "train/dfl_loss"];
  var MAPS = ["metrics/mAP50(B)", "metrics/mAP50-95(B)"];
  var COLOURS = ["#0a58ca", "#b42318", "#9a6700", "#1a7f37", "#8250df"];

  function start() {
    var source = document.getElementById("job-data");
    if (!source || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    var curves = data.curves;
    var charts = [
      makeChart(document.getElementById("chart-loss"), LOSSES, curves, 0, false),
      makeChart(document.getElementById("chart-map"), MAPS, curves, 3, true)
    ];
    window.addEventListener("resize", function () { charts.forEach(fit); });
    if (data.live) { follow(data, curves, charts); }
  }

  function makeChart(el, names, curves, colour, unitRange) {
    var series = [{ label: "epoch" }];
    names.forEach(function (name, i) {
      series.push({ label: name.replace("metrics/", "").replace("(B)", ""),
                    stroke: COLOURS[(colour + i) % COLOURS.length], width: 2,
                    points: { show: true, size: 5 } });
    });
    var opts = {
      width: width(el), height: height(el), series: series,
      scales: { x: { time: false }, y: unitRange ? { range: [0, 1] } : { auto: true } },
      axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }, {}],
      legend: { live: false }
    };
    var plot = new uPlot(opts, columns(names, curves), el);
    return { el: el, names: names, plot: plot };
  }

  function width(el) { return Math.max(200, el.clientWidth - 12); }
  // The figure's height is fixed in CSS; the plot fills what the caption and legend leave.
  function height(el) { return Math.max(120, el.clientHeight - 90); }
  function fit(chart) { chart.plot.setSize({ width: width(chart.el), height: height(chart.el) }); }

  function columns(names, curves) {
    return [curves.epoch.slice()].concat(names.map(function (n) { return curves[n].slice(); }));
  }

  function addEpoch(curves, epoch, metrics) {
    var at = curves.epoch.indexOf(epoch);
    var names = LOSSES.concat(MAPS);
    if (at < 0) {  // epochs arrive in order; a resumed attempt repeats one (replaced)
      at = curves.epoch.length;
      curves.epoch.push(epoch);
      names.forEach(function (n) { curves[n].push(null); });
    }
    names.forEach(function (n) {
      var v = metrics[n];
      curves[n][at] = (typeof v === "number" && isFinite(v)) ? v : null;
    });
  }

  function redraw(charts, curves) {
    charts.forEach(function (chart) {
      chart.plot.setData(columns(chart.names, curves));
      chart.el.setAttribute("data-epochs", String(curves.epoch.length));
    });
  }

  function follow(data, curves, charts) {
    var stream = new EventSource(data.events_url + "?after=" + encodeURIComponent(data.after));
    var status = document.getElementById("chart-status");
    stream.addEventListener("progress", function (msg) {
      var event = JSON.parse(msg.data);
      if (event.trial || !event.data || typeof event.data.epoch !== "number") { return; }
      addEpoch(curves, event.data.epoch, event.data.metrics || {});
      redraw(charts, curves);
      var epoch = document.getElementById("job-epoch");
      if (epoch) { epoch.textContent = event.data.epoch + "/" + event.data.epochs; }
    });
    stream.addEventListener("state", function (msg) {
      var event = JSON.parse(msg.data);
      appendTimeline(event, event.to_state);
      var badge = document.querySelector("#job-state .badge");
      if (badge && event.to_state) {
        badge.textContent = event.to_state;
        badge.className = "badge state-" + event.to_state.toLowerCase();
      }
      if (TERMINAL[event.to_state]) {
        stream.close();
        if (status) { status.textContent = "finished: reload for the report and plots"; }
      }
    });
    stream.addEventListener("message", function (msg) {
      appendTimeline(JSON.parse(msg.data), null);
    });
  }

  // textContent only: reasons and messages are untrusted text.
  function appendTimeline(event, state) {
    var list = document.getElementById("timeline");
    if (!list) { return; }
    var item = document.createElement("li");
    var when = document.createElement("time");
    when.setAttribute("datetime", event.time);
    when.textContent = event.time;
    var badge = document.createElement("span");
    badge.className = "badge" + (state ? " state-" + state.toLowerCase() : "");
    badge.textContent = state || "message";
    var reason = document.createElement("span");
    reason.textContent = event.reason || "";
    item.append(when, " ", badge, " ", reason);
    list.appendChild(item);
    list.scrollTop = list.scrollHeight;
    if (window.tfLocalise) { window.tfLocalise(list); }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
