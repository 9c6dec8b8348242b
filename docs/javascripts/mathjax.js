// MathJax 3 configuration for pymdownx.arithmatex (generic mode).
// arithmatex wraps inline math in \( ... \) and display math in \[ ... \]
// inside elements of class "arithmatex"; only those elements are typeset.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
    tags: "ams"
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  }
};

// With mkdocs-material's instant navigation, pages are swapped without a full
// reload: re-typeset on every page change. `document$` only exists under
// mkdocs-material; other themes load each page normally.
if (typeof document$ !== "undefined") {
  document$.subscribe(function () {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  });
}
