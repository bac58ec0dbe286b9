// treadle dashboard: draws the charts a page embeds as JSON, sorts tables, and keeps
// the compare selection. No inline handlers: the page's CSP allows scripts from here only.
(function () {
  "use strict";

  function drawCharts() {
    var holders = document.querySelectorAll("[data-figure]");
    if (!holders.length) return;
    if (typeof Plotly === "undefined") {
      holders.forEach(function (h) { h.textContent = "charts need plotly.min.js, which did not load"; });
      return;
    }
    holders.forEach(function (holder) {
      var source = document.getElementById(holder.getAttribute("data-figure"));
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      Plotly.newPlot(holder, figure.data, figure.layout, { displaylogo: false, responsive: true })
        .then(function () { holder.setAttribute("data-drawn", "1"); });
    });
  }

  function cellValue(row, index) {
    var cell = row.children[index];
    if (!cell) return "";
    var raw = cell.getAttribute("data-sort");
    var text = raw !== null ? raw : cell.textContent.trim();
    var number = parseFloat(text);
    return isNaN(number) || !/^-?[0-9.eE+-]+$/.test(text) ? text.toLowerCase() : number;
  }

  function sortable() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("thead th").forEach(function (th, index) {
        th.classList.add("sort");
        th.addEventListener("click", function () {
          var body = table.tBodies[0];
          var rows = Array.prototype.slice.call(body.rows);
          var up = th.getAttribute("data-dir") !== "asc";
          table.querySelectorAll("thead th").forEach(function (o) { o.removeAttribute("data-dir"); });
          th.setAttribute("data-dir", up ? "asc" : "desc");
          rows.sort(function (a, b) {
            var x = cellValue(a, index), y = cellValue(b, index);
            if (x === y) return 0;
            if (x === "" || x === "—") return 1;
            if (y === "" || y === "—") return -1;
            return (x < y ? -1 : 1) * (up ? 1 : -1);
          });
          rows.forEach(function (r) { body.appendChild(r); });
        });
      });
    });
  }

  function compareLimit() {
    document.querySelectorAll("form[data-compare]").forEach(function (form) {
      var button = form.querySelector("[data-compare-go]");
      function update() {
        var n = form.querySelectorAll("input[name=run]:checked").length;
        if (button) {
          button.disabled = n < 2 || n > 5;
          button.textContent = "Compare " + n + " runs";
        }
      }
      form.addEventListener("change", update);
      update();
    });
  }

  function projectSwitch() {
    document.querySelectorAll("[data-project-select]").forEach(function (select) {
      select.addEventListener("change", function () { window.location.assign(select.value); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts();
    sortable();
    compareLimit();
    projectSwitch();
  });
})();
