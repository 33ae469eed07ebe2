"""Qt / magicgui widgets: the only modules that import napari or Qt."""
