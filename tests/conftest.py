from tests.fixtures.app import *  # noqa: F401,F403
from tests.fixtures.d1 import *  # noqa: F401,F403
from tests.fixtures.db import *  # noqa: F401,F403
from tests.fixtures.storage import *  # noqa: F401,F403
