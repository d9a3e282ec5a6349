"""Where the package sits in the repository: the one place a path is derived
from a module's own location, so that moving a module does not move its files.
"""
from __future__ import annotations

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # training/vildtrain
TRAINING_DIR = os.path.dirname(PACKAGE_DIR)                # training
REPO_DIR = os.path.dirname(TRAINING_DIR)                   # the repository root
