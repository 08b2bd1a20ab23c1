"""Test support: the bubblewrap stand-in for Apptainer and the image fixtures."""

import pytest

pytest.register_assert_rewrite("support.images")
