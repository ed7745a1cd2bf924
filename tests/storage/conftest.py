from tests.fixtures.storage import *  # noqa: F401,F403
