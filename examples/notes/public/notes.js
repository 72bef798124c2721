// Streams the AI's answer into the page as it is generated; without this script the form still
// posts and the answer arrives whole.
const form = document.getElementById('ask');
const answer = document.getElementById('answer');
if (form && answer) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    answer.textContent = '';
    answer.setAttribute('aria-busy', 'true');
    try {
      const response = await fetch('/ask', { method: 'POST', body: new URLSearchParams(new FormData(form)) });
      if (!response.ok) { answer.textContent = `The AI could not answer (${response.status}).`; return; }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        answer.textContent += decoder.decode(value, { stream: true });
      }
    } catch (e) {
      answer.textContent += ` [${e.message}]`;
    } finally {
      answer.removeAttribute('aria-busy');
      button.disabled = false;
    }
  });
}
