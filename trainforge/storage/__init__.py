"""Object storage behind one small interface: S3 (any S3-compatible endpoint) or a local dir.

Use :func:`open_location` to turn a URI into a store and a key prefix::

    store, key = open_location("s3://datasets/ppe/v3/")
    for info in store.list(key): ...
"""

from trainforge.storage.base import ObjectInfo, ObjectStore, join_key, parse_uri
from trainforge.storage.factory import open_location, store_for_uri
from trainforge.storage.local import LocalStore
from trainforge.storage.s3 import S3Store

__all__ = [
    "LocalStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "join_key",
    "open_location",
    "parse_uri",
    "store_for_uri",
]
