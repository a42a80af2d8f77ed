"""Files shipped with metagrasp: pretrained policy bundles (``pretrained/<name>/``).

A package only so that a regular (non-editable) install carries them, as package data;
``metagrasp demo`` finds them here (:data:`metagrasp.demo.PRETRAINED`).
"""
