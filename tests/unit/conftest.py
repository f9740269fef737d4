# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Lets plain pytest import ringmaster.stack from a checkout, as ansible-test units does from its own tree."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _install_collection_finder():
    from ansible.utils.collection_loader import _collection_finder

    finder_class = _collection_finder._AnsibleCollectionFinder
    if finder_class._find_existing_finder():
        return  # ansible-test units installed one for its own tree

    # The collection loader only finds a collection under <path>/ansible_collections/<namespace>/<name>.
    tree = tempfile.mkdtemp(prefix="ringmaster-units.")
    atexit.register(shutil.rmtree, tree, True)
    os.makedirs(os.path.join(tree, "ansible_collections", "ringmaster"))
    os.symlink(COLLECTION_ROOT, os.path.join(tree, "ansible_collections", "ringmaster", "stack"))
    finder_class(paths=[tree])._install()


_install_collection_finder()
