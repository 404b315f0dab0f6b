"""What a finished run or sweep leaves for people to read: curves and summaries."""
