#!/usr/bin/env bash
# ansible-test sanity on the collection as a user gets it: the tarball from
# `ansible-galaxy collection build`, installed with `ansible-galaxy collection
# install` into a clean ansible_collections/ tree. Run by `make sanity`.
#
#   tests/sanity/run.sh [ansible-test sanity options, e.g. --test pylint FILE...]
#
# Offline: ansible-test fetches its pip bootstrap script from a host this
# network does not reach, but looks in its cache first; tests/sanity/get_pip.py
# is put there under the name for the pip version this ansible-test pins.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$root/.venv/bin
work=$(mktemp -d "${TMPDIR:-/tmp}/multiall-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The venv ansible-test makes for each sanity test starts from this pip version.
pip_version=$("$bin/python" - <<'EOF'
import sys
import types

try:
    from ansible_test._internal.python_requirements import get_venv_packages

    print(get_venv_packages(types.SimpleNamespace(version="3.11"))["pip"])
except (ImportError, AttributeError, KeyError, TypeError) as exc:
    sys.exit(
        "tests/sanity/run.sh: cannot read the pip version this ansible-test pins "
        f"(ansible_test._internal.python_requirements.get_venv_packages: {exc!r}); "
        "update the look-up for this ansible-core"
    )
EOF
)
cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
cp "$root/tests/sanity/get_pip.py" "$cache/get_pip_${pip_version//./_}.py"

# The checkout's ansible.cfg points collections_path at the checkout itself, so
# install would say "nothing to do": run it without that config, from outside.
"$bin/ansible-galaxy" collection build --force --output-path "$work" "$root" >/dev/null
(cd "$work" && env -u ANSIBLE_CONFIG ANSIBLE_COLLECTIONS_PATH="$work/inst" \
    "$bin/ansible-galaxy" collection install --force -p "$work/inst" "$work"/takelan-multiall-*.tar.gz >/dev/null)

cd "$work/inst/ansible_collections/takelan/multiall"
echo ">> ansible-test sanity on the installed collection ($PWD)"
env -u ANSIBLE_CONFIG "$bin/ansible-test" sanity --python 3.11 --requirements "$@"
