"""Lab plugin: gives the plugin folder a file, so that the verify compares
the plugin manifest across hosts like the DAG manifest."""

LAB_PLUGIN_VERSION = 1
