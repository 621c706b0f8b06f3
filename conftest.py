"""Root conftest: registers the harness plugin so `pytest` collects suites/*.yaml.

Through pytest_addhooks rather than ``pytest_plugins`` because an installed copy of this
project also registers the plugin by its entry point; register_once keeps one of the two.
"""


def pytest_addhooks(pluginmanager):
    from harness.plugin import register_once

    register_once(pluginmanager)
