"""What people look at: HTML reports, loss curves, galleries, progress bars."""
