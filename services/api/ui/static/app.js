// Times arrive as ISO UTC in <time datetime>; show them in the browser's own zone.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });

  function localise(root) {
    var nodes = (root || document).querySelectorAll("time[datetime]:not([data-local])");
    for (var i = 0; i < nodes.length; i++) {
      var when = new Date(nodes[i].getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        nodes[i].textContent = format.format(when);
        nodes[i].title = when.toISOString();
      }
      nodes[i].setAttribute("data-local", "");
    }
  }
  window.tfLocalise = localise;

  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  document.addEventListener("htmx:afterSettle", function (evt) {
    localise(evt.target);
    // The log tail is replaced whole on each poll: follow its end once per new element.
    var log = document.getElementById("log");
    if (log && !log.hasAttribute("data-followed")) {
      log.scrollTop = log.scrollHeight;
      log.setAttribute("data-followed", "");
    }
  });
})();
