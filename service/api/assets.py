"""Files shipped inside a package, served from a fixed list of names.

No request path ever reaches the filesystem: a name that is not on the list is a 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.responses import Response


@cache
def read_packaged(package: str, folder: str, name: str) -> bytes:
    return resources.files(package).joinpath(folder, name).read_bytes()


class PackagedFiles:
    def __init__(
        self,
        package: str,
        folder: str,
        media_types: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> None:
        self.package, self.folder = package, folder
        self.media_types = dict(media_types)
        self.headers = dict(headers)

    def read(self, name: str) -> bytes:
        return read_packaged(self.package, self.folder, name)

    def response(self, name: str) -> Response:
        media = self.media_types.get(name)
        if media is None:
            raise HTTPException(404, f"no file named {name!r} here")
        return Response(self.read(name), media_type=media, headers=self.headers)
