"""The live page pipeline: Chromium on a private Xvfb, captured by ffmpeg into live HLS."""
