"""ilma simulator: a building that does not exist, run by the same control core as a real one."""

from sim import jit as _jit

_jit.configure_cache()  # before any compiled kernel of the package is defined
