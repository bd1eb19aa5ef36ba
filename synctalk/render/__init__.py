"""The frame pipeline shared by the renderer service and `synctalk infer`."""
