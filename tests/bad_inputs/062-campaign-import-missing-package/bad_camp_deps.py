"""Needs a package that is not there."""

import no_such_package_xyz  # noqa: F401
