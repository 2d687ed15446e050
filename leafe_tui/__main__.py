from leafe_tui.cli import app

app(prog_name="leafe")
