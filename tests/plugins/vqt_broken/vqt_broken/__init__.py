"""A plugin whose import fails: the toolkit must report it by name and load the others."""

import vqt_module_that_does_not_exist  # noqa: F401
