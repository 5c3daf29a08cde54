"""Offline stand-in for ansible-test's pip bootstrap script (get-pip.py).

ansible-test downloads ``get-pip-<version>.py`` from a CI file host that this
network does not reach, but it looks first in ``~/.ansible/test/cache``.  The
Makefile copies this file there.  It does what the real script does for
ansible-test: put pip into the fresh virtual environment (``ensurepip``) and
then install the packages it was given, from the ordinary package index.
"""

import subprocess
import sys

# Options of get-pip.py that plain ``pip install`` does not know.
_GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    """Bootstrap pip, then ``pip install`` the arguments ansible-test passed."""
    args = [arg for arg in sys.argv[1:] if arg not in _GET_PIP_ONLY]
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)


if __name__ == "__main__":
    main()
