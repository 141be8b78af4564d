// Sortable tables: a click on a column header sorts every body of its table by that column
// (each group of rows on its own, so native and emulated times stay apart). A cell with a
// data-sort number sorts by it; cells without one go last; other columns sort as text.
(function () {
  "use strict";
  function key(cell) {
    if (!cell) return { missing: true };
    var raw = cell.getAttribute("data-sort");
    if (raw !== null && raw !== "" && isFinite(Number(raw))) return { number: Number(raw) };
    var text = cell.textContent.trim();
    return text === "" || text === "\u2014" ? { missing: true } : { text: text };
  }
  function compare(a, b, numeric) {
    if (a.missing || b.missing) return (a.missing ? 1 : 0) - (b.missing ? 1 : 0);
    if (numeric) {
      var an = "number" in a, bn = "number" in b;
      if (an && bn) return a.number - b.number;
      if (an !== bn) return an ? -1 : 1;
    }
    return String(a.text).localeCompare(String(b.text), undefined, { numeric: true });
  }
  function sortBy(table, header, index) {
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var headers = table.tHead.rows[0].cells;
    for (var h = 0; h < headers.length; h++) headers[h].removeAttribute("aria-sort");
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var numeric = table.querySelector("tbody td:nth-child(" + (index + 1) + ")[data-sort]") !== null;
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var rows = Array.prototype.filter.call(body.rows, function (row) {
        return !row.classList.contains("group");
      });
      var keyed = rows.map(function (row, position) {
        return { row: row, key: key(row.cells[index]), position: position };
      });
      keyed.sort(function (a, b) {
        var order = compare(a.key, b.key, numeric);
        if (!a.key.missing && !b.key.missing && !ascending) order = -order;
        return order || a.position - b.position;
      });
      keyed.forEach(function (item) { body.appendChild(item.row); });
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tHead.rows.length) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      header.tabIndex = 0;
      header.title = "sort by this column";
      header.addEventListener("click", function () { sortBy(table, header, index); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(table, header, index);
        }
      });
    });
  });
})();
