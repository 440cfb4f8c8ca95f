(function () {
  "use strict";
  // Worklist: sort by a column (within each group), filter by text, group, population, hospice.
  var table = document.getElementById("worklist");
  if (table) {
    var text = document.getElementById("filter-text");
    var group = document.getElementById("filter-group");
    var population = document.getElementById("filter-population");
    var hospice = document.getElementById("filter-hospice");
    var count = document.getElementById("filter-count");
    var rows = Array.prototype.slice.call(table.querySelectorAll("tbody tr[data-patient]"));
    var apply = function () {
      var words = text.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      rows.forEach(function (row) {
        var flags = (row.getAttribute("data-flags") || "").split(" ");
        var search = row.getAttribute("data-search") || "";
        var ok = (!group.value || flags.indexOf(group.value) >= 0) &&
          (!population.value || row.getAttribute("data-population") === population.value) &&
          (!hospice.checked || row.getAttribute("data-hospice") === "yes") &&
          words.every(function (w) { return search.indexOf(w) >= 0; });
        row.hidden = !ok;
        if (ok) { shown += 1; }
      });
      Array.prototype.forEach.call(table.tBodies, function (body) {
        body.hidden = !body.querySelector("tr[data-patient]:not([hidden])");
      });
      count.textContent = shown + " of " + rows.length + " patients shown";
    };
    [text, group, population, hospice].forEach(function (el) {
      el.addEventListener("input", apply);
      el.addEventListener("change", apply);
    });
    document.getElementById("filter-reset").addEventListener("click", function () {
      text.value = ""; group.value = ""; population.value = ""; hospice.checked = false; apply();
    });
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(table.querySelectorAll("thead button[data-col]"), function (button) {
      button.addEventListener("click", function () {
        var col = Number(button.getAttribute("data-col"));
        var th = heads[col];
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        var numeric = th.getAttribute("data-type") === "number";
        Array.prototype.forEach.call(heads, function (h) {
          if (h.hasAttribute("aria-sort")) { h.setAttribute("aria-sort", "none"); }
        });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        Array.prototype.forEach.call(table.tBodies, function (body) {
          var list = Array.prototype.slice.call(body.querySelectorAll("tr[data-patient]"));
          list.sort(function (a, b) {
            var x = a.cells[col].getAttribute("data-sort") || "";
            var y = b.cells[col].getAttribute("data-sort") || "";
            var order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
            if (order === 0) {
              order = a.getAttribute("data-patient").localeCompare(b.getAttribute("data-patient"));
            }
            return ascending ? order : -order;
          });
          list.forEach(function (row) { body.appendChild(row); });
        });
      });
    });
  }

  // Charts: every described mark shows its description on hover, tap or keyboard focus.
  var tip = document.createElement("div");
  tip.id = "chart-tip";
  tip.setAttribute("role", "tooltip");
  tip.hidden = true;
  document.body.appendChild(tip);
  var active = null;
  var show = function (mark) {
    if (active && active !== mark) { active.classList.remove("active"); }
    active = mark;
    mark.classList.add("active");
    tip.textContent = mark.getAttribute("aria-label");
    tip.hidden = false;
    var box = mark.getBoundingClientRect();
    var left = window.scrollX + box.left + box.width / 2 + 8;
    var maxLeft = window.scrollX + document.documentElement.clientWidth - tip.offsetWidth - 8;
    tip.style.left = Math.max(window.scrollX + 4, Math.min(left, maxLeft)) + "px";
    tip.style.top = (window.scrollY + box.bottom + 8) + "px";
  };
  var hide = function () {
    if (active) { active.classList.remove("active"); }
    active = null;
    tip.hidden = true;
  };
  var marks = document.querySelectorAll("figure.chart svg [role='graphics-symbol'][aria-label]");
  Array.prototype.forEach.call(marks, function (mark) {
    mark.setAttribute("tabindex", "0");
    mark.addEventListener("mouseenter", function () { show(mark); });
    mark.addEventListener("mouseleave", hide);
    mark.addEventListener("focus", function () { show(mark); });
    mark.addEventListener("blur", hide);
    mark.addEventListener("click", function (event) { event.stopPropagation(); show(mark); });
  });
  document.addEventListener("click", function () { if (active) { hide(); } });
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") { hide(); } });

  // Printing shows every table: collapsed ones are opened first.
  window.addEventListener("beforeprint", function () {
    Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) {
      d.open = true;
    });
  });
})();
