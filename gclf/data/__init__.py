"""Dataset ingestion, one concern per module; callers import from the module that holds a name.

- :mod:`gclf.data.manifest`: records, the split manifests (CSV) and :class:`~gclf.data.manifest.DataError`;
- :mod:`gclf.data.formats`: the dataset layouts ``data.format`` names, scanned into records;
- :mod:`gclf.data.clean`: which files are usable: read, hashed and test-decoded once; duplicates removed;
- :mod:`gclf.data.split`: the split stage's work: scan, clean, stratified split, manifests, counts;
- :mod:`gclf.data.images`: decoding images as the model sees them, the decode cache, a split's tensors;
- :mod:`gclf.data.dataset`: the training :class:`~torch.utils.data.Dataset` over decoded images.
"""

WORKERS = 2  # threads hashing and decoding images (clean, images, gclf predict): PIL and file reads release the GIL
