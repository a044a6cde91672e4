"""One run, from a config to a folder of outputs: the checks before anything loads (``validate``), the memory
it will need (``memory``), the models it loads and keeps (``models``, ``fetch``), the loop (``loop``), its
folder (``folders``), what it writes (``export``) and how a result is judged (``evaluate``)."""
