"""Runs the Python module's pytest suite for ctest: exit 77 (skipped, with the reason) where pytest
or the module is missing or every test skipped itself."""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
try:
    import pytest  # noqa: F401
except ImportError:
    print("SKIP: pytest is not installed (apt-get install python3-pytest)")
    sys.exit(77)
# run_pytest.py [FILE.py ...] [pytest arguments]: the named test files of this folder, else all of them.
files = [os.path.join(here, a) for a in sys.argv[1:] if a.endswith(".py")]
rest = [a for a in sys.argv[1:] if not a.endswith(".py")]
rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"] + (files or [here]) + rest)
sys.exit(77 if rc == 5 else rc)  # 5: nothing ran
