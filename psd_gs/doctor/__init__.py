"""``python -m psd_gs doctor``: the host self-check (``checks``) and the tiny random checkpoints it and the
tests build and load through the real loaders (``tiny``)."""
