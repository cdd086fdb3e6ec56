// MathJax 3 reads this object when its script (loaded next, from this site) starts.
// pymdownx.arithmatex (generic mode) wraps each formula in \( \) or \[ \] inside an element of
// class "arithmatex"; only those elements are typeset, so code samples stay as they are.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  svg: { fontCache: "global" },
};
