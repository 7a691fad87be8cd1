// dawms monitor: refresh the parts of a page marked data-refresh="<seconds>" in place.
// The same page is fetched again (with the session cookie) and the element of the same
// id is swapped in; what the server sent is already escaped HTML, and scripts in parsed
// documents never run. Nothing is fetched from anywhere but this server.
(function () {
  "use strict";
  function stamp() {
    var el = document.getElementById("refreshed");
    if (el) { el.textContent = "refreshed " + new Date().toLocaleTimeString(); }
  }
  function refresh(id, seconds) {
    window.setTimeout(function tick() {
      if (document.hidden) { window.setTimeout(tick, seconds * 1000); return; }
      fetch(window.location.href, {credentials: "same-origin",
                                   headers: {"Accept": "text/html", "X-Dawms-Refresh": id}})
        .then(function (reply) {
          if (!reply.ok) { throw new Error("HTTP " + reply.status); }
          return reply.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
          var old = document.getElementById(id);
          if (fresh && old) {
            old.replaceWith(document.importNode(fresh, true));
            stamp();
            var next = fresh.getAttribute("data-refresh");
            if (next) { refresh(id, Math.max(2, parseInt(next, 10) || seconds)); }
          }
        })
        .catch(function () { window.setTimeout(tick, seconds * 4000); });
    }, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh][id]").forEach(function (el) {
      refresh(el.id, Math.max(2, parseInt(el.getAttribute("data-refresh"), 10) || 10));
    });
    stamp();
  });
})();
