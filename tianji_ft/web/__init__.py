"""The Streamlit demo over the chat engine (``tianji-ft web``)."""
