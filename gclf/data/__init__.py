"""Datasets: layouts scanned into records, cleaned, split into manifests, decoded into the arrays the
model sees (the embedded synthetic set among them); docs/code.md."""

# Threads reading, hashing, decoding, drawing and writing images (clean, images, synthetic, gclf predict):
# PIL's codecs and file I/O release the GIL.
WORKERS = 2
