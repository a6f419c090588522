"""A user script that mypy must pass (tests/test_typing_user.py, .ci/run)."""
from typing import TYPE_CHECKING

import numpy as np

import fastnn
from fastnn import Dense, Dropout, MLPClassifier, MLPRegressor, Sequential

X = np.zeros((20, 4), dtype=np.float32)
y = np.arange(20) % 3
model = Sequential(Dense(4, 8, activation="relu"), Dropout(0.2), Dense(8, 3), seed=0)
history: fastnn.History = model.fit(X, y, epochs=2, batch_size=8, verbose=0, seed=0,
                                    callbacks=[fastnn.EarlyStopping(monitor="loss", patience=2)])
scores: dict[str, float] = model.evaluate(X, y)
proba: np.ndarray = model.predict_proba(X)
clf = MLPClassifier((8,), random_state=0)
reg = MLPRegressor((8,), random_state=0)

if TYPE_CHECKING:   # mypy prints these types (the test reads them)
    reveal_type(MLPClassifier)
    reveal_type(model.fit)
