from tophan.cli.main import launch

launch()
