// Render the mathematics that pymdownx.arithmatex (generic mode) leaves in the
// page: <span class="arithmatex">\(...\)</span> inline and
// <div class="arithmatex">\[...\]</div> for display, with the KaTeX bundled in
// assets/katex (no network). A formula KaTeX cannot parse is shown in red
// with its source, not silently dropped.
(function () {
  function render() {
    document.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.dataset.rendered) return;
      var tex = el.textContent.trim();
      var display = el.tagName === "DIV";
      if (tex.startsWith("\\(") && tex.endsWith("\\)")) {
        tex = tex.slice(2, -2);
      } else if (tex.startsWith("\\[") && tex.endsWith("\\]")) {
        tex = tex.slice(2, -2);
        display = true;
      }
      katex.render(tex, el, { displayMode: display, throwOnError: false });
      el.dataset.rendered = "true";
    });
  }
  if (typeof document$ !== "undefined") {
    document$.subscribe(render); // Material's page-load signal (instant navigation too)
  } else {
    document.addEventListener("DOMContentLoaded", render);
  }
})();
