"""Sphinx configuration of the minseg book; ``tools/build_book.py`` copies it next to the
generated pages (the executed lessons) and runs ``sphinx-build`` there."""
project = "minseg"
author = "the minseg authors"
extensions = ["myst_nb"]
# The lessons arrive executed (tools/run_notebooks.py or the test suite's nbval run): never rerun.
nb_execution_mode = "off"
nb_ipywidgets_js = {}                       # no widget manager from a CDN: pages work offline
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
suppress_warnings = ["myst.xref_missing"]   # links to exercises/ and solutions/ are not pages here
html_theme = "furo"
html_title = "minseg"
html_static_path = ["_static"]
html_css_files = ["minseg.css"]
# MathJax 3 with SVG output, copied into _static by the builder: no network, no web fonts.
mathjax_path = "mathjax.js"
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}}
exclude_patterns = ["_build"]
