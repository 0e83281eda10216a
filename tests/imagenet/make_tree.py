#!/usr/bin/env python3
"""Writes a small synthetic ILSVRC2012 tree with real JPEGs (OpenCV):
    ROOT/train/<wnid>/<wnid>_<k>.JPEG, ROOT/val/ILSVRC2012_val_<k>.JPEG (flat, shuffled classes),
    ROOT/LOC_val_solution.csv (Kaggle's ground-truth format), ROOT/LOC_synset_mapping.txt.
Class c is drawn in its own dominant colour with noise and a random rectangle, at varied sizes and
aspect ratios (short sides 120..400), so a small model separates the classes in a few steps.
usage: make_tree.py ROOT TRAIN_PER_CLASS VAL_PER_CLASS"""
import os
import sys

import cv2
import numpy as np

SYNSETS = [("n01440764", "tench, Tinca tinca"), ("n01443537", "goldfish, Carassius auratus"),
           ("n01484850", "great white shark, white shark, man-eater")]
COLOURS = [(40, 40, 200), (40, 200, 40), (200, 40, 40)]  # BGR: red, green, blue dominant


def image(rng, c):
    h, w = [(240, 320), (300, 200), (375, 500), (120, 160), (400, 400)][rng.integers(5)]
    img = np.clip(rng.normal(COLOURS[c], 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    cv2.rectangle(img, (x0, y0), (x0 + w // 3, y0 + h // 3), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return img


def main():
    root, n_train, n_val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(7)
    for c, (wnid, _) in enumerate(SYNSETS):
        os.makedirs(f"{root}/train/{wnid}", exist_ok=True)
        for k in range(n_train):
            assert cv2.imwrite(f"{root}/train/{wnid}/{wnid}_{1000 + k}.JPEG", image(rng, c))
    os.makedirs(f"{root}/val", exist_ok=True)
    order = [c for c in range(len(SYNSETS)) for _ in range(n_val)]
    rng.shuffle(order)
    with open(f"{root}/LOC_val_solution.csv", "w") as gt:
        gt.write("ImageId,PredictionString\n")
        for k, c in enumerate(order, start=1):
            name = f"ILSVRC2012_val_{k:08d}"
            assert cv2.imwrite(f"{root}/val/{name}.JPEG", image(rng, c))
            gt.write(f"{name},{SYNSETS[c][0]} 10 10 100 100 {SYNSETS[c][0]} 5 5 50 50\n")
    with open(f"{root}/LOC_synset_mapping.txt", "w") as m:
        for wnid, words in reversed(SYNSETS):  # any order: the lists sort by wnid
            m.write(f"{wnid} {words}\n")


if __name__ == "__main__":
    main()
