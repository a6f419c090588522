"""A user script with two typos that mypy must report (tests/test_typing_user.py, .ci/run):
a misspelled class name and a misspelled keyword of Sequential.fit."""
import numpy as np

from fastnn import Dense, MLPClasifier, Sequential

X = np.zeros((20, 4), dtype=np.float32)
y = np.arange(20) % 3
model = Sequential(Dense(4, 8, activation="relu"), Dense(8, 3), seed=0)
model.fit(X, y, epochs=2, batchsize=8)
