#!/usr/bin/env python3
"""Writes the first N images of a Fashion-MNIST idx pair (gz or plain) as a plain idx pair.
usage: fmnist_subset.py IMAGES LABELS N OUT_STEM   ->  OUT_STEM-images-idx3-ubyte, OUT_STEM-labels-idx1-ubyte"""
import gzip
import struct
import sys


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


images, labels, n, stem = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
img, lab = read(images), read(labels)
magic, count, rows, cols = struct.unpack(">IIII", img[:16])
assert magic == 0x803 and n <= count, (magic, count, n)
with open(stem + "-images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">IIII", magic, n, rows, cols) + img[16:16 + n * rows * cols])
with open(stem + "-labels-idx1-ubyte", "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + lab[8:8 + n])
