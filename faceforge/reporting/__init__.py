"""Result tables (markdown, CSV) and per-video prediction files made from evaluation reports."""
