"""Datasets in the dmnet layout: preprocessing, the synthetic generator and clip sampling."""
