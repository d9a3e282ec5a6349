"""Writes the .npy fixtures of bundle/npy_test.go with NumPy itself.

Run from this directory: /usr/bin/python3 make_npy.py
"""
import numpy as np

np.save("f32_2x3.npy", np.arange(6, dtype="<f4").reshape(2, 3) / 4)
np.save("i64_4.npy", np.array([0, -1, 49407, 2**40], dtype="<i8"))
np.save("f32_scalar.npy", np.array(1.5, dtype="<f4"))
np.save("f32_empty.npy", np.zeros((0, 5), dtype="<f4"))
np.save("f64_bad.npy", np.zeros(3, dtype="<f8"))
np.save("f32_fortran_bad.npy", np.asfortranarray(np.zeros((2, 3), dtype="<f4")))
np.save("u8_packbits.npy", np.packbits(np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=bool), axis=None))
