# JupyterLab for `make lab`: the project folder, on this machine only, opening on the notebooks.
c = get_config()  # noqa: F821 (provided by Jupyter when it reads this file)
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.root_dir = "."
c.LabApp.default_url = "/lab/tree/notebooks"
# Containers and CI machines often run as root; the server still listens on 127.0.0.1 only.
c.ServerApp.allow_root = True
