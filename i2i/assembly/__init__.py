"""From a recipe to objects: the plugin host, recipe loading and checks, building components."""
