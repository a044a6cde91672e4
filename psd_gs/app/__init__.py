"""The Gradio page's parts (``app.py`` at the top of the repository is its entry point): the page and its
handlers (``page``), what it shows (``ui``) and its charts (``plots``), a run in its own thread (``live``),
and the rules that make it safe to serve to others (``serve``)."""
