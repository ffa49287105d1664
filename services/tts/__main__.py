"""`python -m services.tts`: settings → engine → bus → loop."""

from services.tts.service import TtsService
from services.tts.settings import TtsSettings
from shared.runner import main_for


def main() -> None:
    """Run the TTS service."""
    main_for("tts", TtsSettings(), TtsService)


if __name__ == "__main__":
    main()
