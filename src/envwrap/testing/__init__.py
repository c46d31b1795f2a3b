"""Tests a backend plug-in reuses: the contract every envwrap backend keeps.

A plug-in store (a :class:`envwrap.backends.Backend` registered under the
``envwrap.backends`` entry-point group) proves that it keeps the contract by
running these tests against its real store. In the plug-in's test suite::

    import pytest
    from envwrap.testing import BackendContract

    class MyStore:                      # a StoreAdapter
        has_versions = True             # probe() returns a version id
        plain_key = None                # or the key a plain string is stored under

        def __init__(self, server) -> None:
            self.server = server
            self.backend = MyBackend({"MY_ADDR": server.address})

        def write(self, name, data) -> None: ...    # create, or add a version
        def locator(self, name): return Locator("my", name)
        def unique_name(self) -> str: ...           # a name no other test uses

    class TestMyBackendContract(BackendContract):
        @pytest.fixture
        def store(self, my_server) -> MyStore:
            return MyStore(my_server)

pytest collects the class (its name starts with ``Test``) and runs every
``test_*`` method of the mixin with that ``store``. The module imports pytest:
envwrap itself never imports ``envwrap.testing``.
"""

from envwrap.testing.backend_contract import BackendContract, StoreAdapter

__all__ = ["BackendContract", "StoreAdapter"]
